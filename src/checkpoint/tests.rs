//! Tests on a real torch.save file.
