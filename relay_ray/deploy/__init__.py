"""From one machine to a cluster: what the relay's tiers ask of Ray, checks against cluster
descriptions (Ray cluster launcher YAML, KubeRay manifests), the KubeRay rendering, and
capacity planning from Locust runs."""
