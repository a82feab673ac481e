"""Label quality against references: parsers for the field's annotation formats, DER/JER/WER/CER scoring,
and the ablation of the report's post-processing rules (`python -m jobs.evaluate`)."""
