"""`python -m cli` runs the `kesu` command line."""
from cli import main

main()
