"""Training the small trainable parts: the pocket backbone's connector (and, later, fusers)."""
