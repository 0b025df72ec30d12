"""Vocabulary adaptation: fertility, tokenizer training and extension, embedding initialisation."""
