"""Models: the zoo and user model specs."""
