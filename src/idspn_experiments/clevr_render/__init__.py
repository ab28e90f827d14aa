"""The CLEVR-format data generator (``idspn data clevr-synth``), imported only when generating."""
