"""The outbox: images and sidecars delivered, reference thumbnails, and the gallery page."""
