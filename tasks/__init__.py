"""tasks layer of vardax-cycle (see ARCHITECTURE.md)."""
