"""``mlplat push``: a graduated bundle goes to a target, health-gated, smoke-tested, rolled back
when anything is wrong, and recorded (``engine.py`` is the seam every engine implements)."""
