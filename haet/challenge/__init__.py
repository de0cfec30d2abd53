"""The HAET challenge as a harness: plug-in submissions (haet.challenge.submission) trained in a child process
(haet.challenge.child) under a hard deadline and scored by the harness (haet.challenge.runner) on test images the
submission never sees. Nothing is imported here: the child runs as `python -m haet.challenge.child`."""
