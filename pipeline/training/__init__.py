"""Training the flag models in models/ (`python -m pipeline train-flags`) and the labelled data they
learn from (pipeline/training/data/). A pipeline run never imports this package: what it needs to
load and apply a model is in pipeline/models/.

- offence_ngram: the offence n-gram model (models/offence/).
- offence_encoder, offence_encoder_extra, lora: the fine-tuned offence encoders (models/offence_encoder*/).
- offence_blend: the blend of an encoder with the n-gram model (`blend_with_ngram` in its model.json).
- offence_data: the offence training rows (COLD and the own sets' train / heldout / test split).
- conspiracy: the conspiracy head and n-gram model (models/conspiracy*/).
- metrics: the F1 numbers and threshold choices all of them report.
- gpu_bundle, gpu_train, package_encoder: how the shipped encoders were trained on a bare GPU machine
  and installed.
- model_card: MODEL_CARD.md beside each shipped model.
"""
