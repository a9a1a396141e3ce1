"""The portal's pure rules: CSRF tokens, what a journey shows, the CSV, the messages."""
