"""A case's life on the staff side: take-in of sealed submissions, retention."""
