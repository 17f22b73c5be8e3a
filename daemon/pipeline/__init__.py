"""One job from start to end: claim, generate, deliver, settle; and recovery after a crash."""
