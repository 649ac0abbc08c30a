"""Package-format backends. Format-specific code lives only below this package."""
