# syntax=docker/dockerfile:1
# Images of a team's qmlops on Kubernetes (docs/kubernetes.md). Build from the repository's root:
#
#   docker build -t REGISTRY/qmlops-singleuser:0.1.0 .                          users' servers
#   docker build --build-arg EXTRAS=hub,providers -t REGISTRY/qmlops-service:0.1.0 .
#                                                  the `qmlops` and `mlflow` service Deployments
#   docker build --target hub -t REGISTRY/qmlops-hub:0.1.0 .                      the hub
#
# Dependencies are installed with requirements.lock as constraints: an image holds the versions the
# test suite ran with. No secret goes into any layer: keys, tokens and database passwords reach
# the pods from Kubernetes Secrets at run time.

# -- Node.js for the JupyterLab extension's build -------------------------------------------------
FROM node:20-bookworm-slim AS node

# -- the wheel, with the JupyterLab extension built into it ---------------------------------------
FROM python:3.11-slim-bookworm AS wheel
COPY --from=node /usr/local/bin/node /usr/local/bin/node
WORKDIR /src
# What building the wheel reads, nothing more (.dockerignore keeps build output and
# node_modules out, so the package's build hook builds the extension afresh).
COPY pyproject.toml README.md requirements.lock ./
COPY jupyter-config/ jupyter-config/
COPY labextension/ labextension/
COPY notebooks/dashboards/ notebooks/dashboards/
COPY qmlops_jupyter/ qmlops_jupyter/
# The build hook ([tool.hatch.build.hooks.jupyter-builder] in pyproject.toml) runs
# `jlpm install` and `jlpm build:prod` in labextension/; PIP_CONSTRAINT pins the build
# environment (hatchling, hatch-jupyter-builder, jupyter-builder) to the lock as well.
RUN PIP_CONSTRAINT=/src/requirements.lock YARN_ENABLE_TELEMETRY=0 \
        pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && test -n "$(ls /dist/qmlops_jupyter-*.whl)"

# -- the hub: Zero to JupyterHub's hub image with the toolkit's authenticator ---------------------
# jupyterhub/k8s/values.yaml names the authenticator the local config uses,
# qmlops_jupyter.server.hub.native.LabAuthenticator (NativeAuthenticator with a login page that
# works on JupyterHub 5 and later). The hub imports nothing else of the toolkit: no dependencies.
FROM quay.io/jupyterhub/k8s-hub:4.4.0 AS hub
USER root
COPY --from=wheel /dist/ /tmp/qmlops-dist/
RUN pip install --no-cache-dir --no-deps /tmp/qmlops-dist/qmlops_jupyter-*.whl \
    && rm -rf /tmp/qmlops-dist
USER 1000

# -- users' servers (the default target), and with EXTRAS=hub,providers the services -------------
FROM python:3.11-slim-bookworm AS singleuser
ARG NB_USER=jovyan
ARG NB_UID=1000
ARG NB_GID=100
# The package's extras: `jupyter` for users' servers (JupyterLab, the server extension, magics,
# widgets, Voila); `hub,providers` for the image of the two service Deployments.
ARG EXTRAS=jupyter
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SHELL=/bin/bash \
    HOME=/home/${NB_USER}

# tini reaps kernels' children; git for notebooks that clone repositories.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid ${NB_UID} --gid ${NB_GID} --shell /bin/bash ${NB_USER}

COPY requirements.lock /tmp/qmlops/requirements.lock
COPY --from=wheel /dist/ /tmp/qmlops/dist/
# jupyterhub provides jupyterhub-singleuser, the command KubeSpawner starts.
RUN wheel="$(ls /tmp/qmlops/dist/qmlops_jupyter-*.whl)" \
    && pip install -c /tmp/qmlops/requirements.lock "${wheel}[${EXTRAS}]" jupyterhub \
    && rm -rf /tmp/qmlops \
    && jupyter server extension list 2>&1 | grep -q "qmlops_jupyter.*enabled" \
    && jupyter labextension list 2>&1 | grep -q "qmlops-jupyter.*enabled"

# The examples, read-only in the image; a user's server copies them into ~/examples when that
# folder is missing (singleuser.lifecycleHooks in jupyterhub/k8s/values.yaml), since the home
# folder is the user's own volume.
COPY notebooks/ /opt/qmlops/notebooks/

WORKDIR /home/${NB_USER}
USER ${NB_UID}
EXPOSE 8888
ENTRYPOINT ["tini", "-g", "--"]
CMD ["jupyterhub-singleuser"]
