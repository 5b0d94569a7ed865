"""Speech-to-text: audio features, the recogniser, its training, CTC and transcription."""
