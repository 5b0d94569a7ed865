"""Translation: decoding text, streaming input, evaluation with BLEU/chrF, alignments."""
