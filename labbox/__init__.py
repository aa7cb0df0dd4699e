"""Lab-in-a-box: simulated GPU hosts, a local registry mirror and a signed apt
repository, all built locally, so that effdet-lab runs end to end without a GPU,
Docker Hub or NVIDIA's servers."""
