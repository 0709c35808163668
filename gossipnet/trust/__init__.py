"""Who may speak in a swarm: node identities, swarm keys, certificates, admission policies.

- ``identity``: a node's key file, node id and incarnation, and the printable forms of keys.
- ``swarm``: swarm ids, certificates, the admission policies receivers apply, the swarm directory.
- ``credentials``: the one policy (and own certificate) a node runs with, from its flags.

docs/SECURITY.md has the threat model.
"""
