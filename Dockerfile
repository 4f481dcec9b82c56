# The image of `drill sfn-worker` (docs/stepfunctions.md), and of any `drill` command run in a container.
#
#   docker build -t restore-drills .
#   docker run --rm restore-drills --help
#   docker run --rm -e AWS_REGION=eu-west-1 restore-drills sfn-worker --queue-url https://sqs... --runbook-root /runbooks
#
# The base is pinned to a full version and Debian release, so a rebuild does not silently change
# Python or the clients; bump it deliberately (pin a digest too where your registry allows).
FROM python:3.11.11-slim-bookworm

# The PostgreSQL and MariaDB clients (psql, pg_restore, mariadb): for dumps and for a human
# debugging a drill from inside the container. No server: AWS drills restore into RDS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client mariadb-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/restore-drills
COPY pyproject.toml README.md ./
COPY drills ./drills
COPY validators ./validators
RUN pip install --no-cache-dir . && drill --help > /dev/null

# Never root: the worker needs no privilege, and a runbook's SQL runs on production copies.
RUN useradd --system --create-home --home-dir /home/drill --uid 10001 drill
USER drill
WORKDIR /home/drill
ENV RESTORE_DRILLS_HOME=/home/drill/.local/state/restore-drills \
    PYTHONUNBUFFERED=1

# SIGTERM (ECS stops tasks with it) reaches drill directly: the worker answers the task in hand
# with SendTaskFailure("worker stopped") so the execution tears down.
STOPSIGNAL SIGTERM
ENTRYPOINT ["drill"]
CMD ["--help"]
