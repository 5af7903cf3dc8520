# Training image: runs the DVC pipeline (prepare -> fingerprint -> train -> register) against
# the MLflow tracking server named by MLFLOW_TRACKING_URI, with the commands used natively.
# compose.yaml runs it as the service trainer (README, "Containers").
#
# Its params.yaml reads the data from /data/applicants.csv (data.raw): the embedded synthetic
# file, unless another one is mounted there. It runs `dvc repro`, so a model that passes the gate
# becomes Production (register.promote: auto); `dvc exp run` would only register a challenger.
#
#   docker build -t credit-risk-train .
#   docker run --rm -e MLFLOW_TRACKING_URI=http://mlflow.example:5000 credit-risk-train
#   docker run --rm -e MLFLOW_TRACKING_URI=... -v /path/to/cs-training.csv:/data/applicants.csv:ro \
#       credit-risk-train
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    DVC_NO_ANALYTICS=1

# DVC needs git; the distribution's security updates decide the exact version.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 trainer
WORKDIR /home/trainer/project

# The pinned dependencies first, in a layer of their own: a change of code or data reinstalls
# only the project itself.
COPY --chown=trainer:trainer pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY --chown=trainer:trainer . .
RUN pip install --no-cache-dir --no-deps . && rm -rf build src/*.egg-info
RUN mkdir /data && cp data/gmsc-synthetic.csv /data/applicants.csv \
    && sed -i 's|^  raw: data/gmsc-synthetic.csv$|  raw: /data/applicants.csv|' params.yaml \
    && grep -qx '  raw: /data/applicants.csv' params.yaml
USER 1000:1000
# The pipeline is a DVC project in a git repository, as in a clone of this project; `dvc exp
# run` commits experiments, hence an identity.
RUN git config --global user.name "credit-risk trainer" \
    && git config --global user.email trainer@localhost \
    && git init -q \
    && git add -A \
    && git commit -qm "training image"

CMD ["dvc", "repro"]
