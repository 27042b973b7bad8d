"""Stage logic of vigil as plain Python, free of Ray: decode, models, embed, index, store."""
