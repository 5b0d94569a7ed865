"""The model core: the cell registry, the recurrent stack, attention, the seq2seq model
and search."""
