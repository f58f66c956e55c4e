# OpenTracy engine image. Build: docker build -t opentracy .
# Run:   docker run -p 8080:8080 -v opentracy-data:/data -e OPENAI_API_KEY -e OPENTRACY_API_KEYS=app:sk-... opentracy
# Provider keys and engine keys come from the environment at run time; none are baked in. It binds
# 0.0.0.0, so `opentracy serve` refuses to start without an engine key.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    OPENTRACY_DATA_DIR=/data

RUN useradd --create-home --uid 10001 opentracy \
    && mkdir -p /data /app \
    && chown 10001:10001 /data

WORKDIR /app
COPY pyproject.toml README.md litellm_config.yaml ./
COPY opentracy ./opentracy
COPY callbacks ./callbacks
# The same install step CI runs (pip install .), so what CI tests is what the image ships.
RUN pip install --no-cache-dir .

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4).status == 200 else 1)"]
CMD ["opentracy", "serve", "--host", "0.0.0.0", "--port", "8080", "--config", "/app/litellm_config.yaml"]
