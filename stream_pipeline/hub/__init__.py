"""Hosted Roboflow models: the weights API client, downloads and the offline cache."""
