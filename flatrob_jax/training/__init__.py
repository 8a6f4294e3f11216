"""Training: state, optimizer, losses, the data-parallel steps and the loop."""
