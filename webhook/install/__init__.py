"""What it takes to install the guard: webhook certificates and the install manifests (design §13).

Owns everything X.509 (`certs`, the only importer of `cryptography`) and the packaged install YAML
with the self-signed overlay's changes (`manifests`). Certificate building returns PEM bytes;
writing files is a separate step. It imports no other `webhook` package.
"""
