# The presence agent on Debian 12 with Kamailio 5.6, installed by the same
# script as the README and CI (bin/pa-install).
#
#   docker compose up --build              Kamailio + MariaDB (docker-compose.yml)
#   docker build -t presence-agent .
#   docker run --rm presence-agent .ci/run the test suite, as CI runs it
FROM debian:12

WORKDIR /opt/presence-agent
# The packages first, in a layer of their own: it is rebuilt only when the
# install script changes, not for every change of the code.  MariaDB is
# installed too (the tests use it); it starts only when asked.
COPY bin/pa-install bin/pa-install
RUN PA_INSTALL_START_DB=no bin/pa-install && rm -rf /var/lib/apt/lists/*
COPY . .

# bin/pa-run: settings from PA_CONFIG, or a new file for PA_DB_URL; the
# schema upgraded; Kamailio in the foreground on the container's address.
# Set PA_SKIP_INSTALL= (empty) to have it start the image's own MariaDB.
# .ci/run inside the image runs the test suite only (no Docker in Docker).
# Kamailio's memory (bin/pa-run passes them as -m, -M and -x): size shared
# memory for your load, see the README, "Memory".
ENV PA_SKIP_INSTALL=1 PA_CI_IN_CONTAINER=1 PA_SHM_MB=256 PA_PKG_MB=16 PA_ALLOCATOR=tlsf
EXPOSE 5060/udp 5060/tcp
CMD ["sh", "-c", "PA_LISTEN=${PA_LISTEN:-$(hostname -i | cut -d' ' -f1):5060} exec bin/pa-run"]
