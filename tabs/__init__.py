"""One module per tab; each builds its widgets and wires events to core/ and train/."""
