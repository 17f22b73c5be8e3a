"""`gpt-image-inbox run`: a scheduler that decides what runs when, and the shell around it."""
