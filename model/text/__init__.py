"""Text in and out of the model: the tokenizer and the V4 chat encoding."""
