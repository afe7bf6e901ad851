"""Data: the task's word-level tokenizer, the TFDS builder (array_record), the batch loader.

Import the modules directly (`lenggen.data.dataset`, `.loader`, `.tokenizer`); this package file
imports nothing so that `import lenggen.data.tokenizer` does not pull in tfds.
"""
