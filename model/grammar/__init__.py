"""JSON Schemas as grammars for constrained decoding: constraint levels, refs, token masks and
the closing plans that finish an output within its budget."""
