"""Client codecs: one per API format a client speaks (Chat, Responses, Messages)."""
