# The edge proxy of a Swarm target published with `publish = "edge"` (mlplat_tui/push/edge.py):
# HAProxy from Debian's packages on the local base image, for kernels without IPVS where the
# routing mesh does not answer. The .deb files come from the host (`apt-get download`, a
# bookworm host for a bookworm base) in the build context's debs/: the build needs no network.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
COPY debs/ /tmp/debs/
# policy-rc.d: the package's maintainer scripts must not start a haproxy during the build.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && dpkg -i /tmp/debs/*.deb \
 && rm -rf /tmp/debs /usr/sbin/policy-rc.d \
 && install -d -o haproxy -g haproxy -m 0755 /etc/mlplat-edge /run/haproxy \
 && haproxy -v
USER haproxy
EXPOSE 8080
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/etc/mlplat-edge/haproxy.cfg"]
LABEL io.mlplat.image="edge"
