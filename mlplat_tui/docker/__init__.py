"""The Docker engine as the control plane uses it: connection, errors, image builds. Shared by
the docker stack backend and (later) the Swarm push target."""
