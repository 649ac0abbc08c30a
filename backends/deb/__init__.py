"""Debian backend: .deb archives, APT repositories and the dpkg database."""
