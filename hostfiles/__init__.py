"""What comes from the build host rather than from package archives."""
