"""The networks, their losses and the artifact I/O (safetensors + JSON manifests, never pickles)."""
