"""Face locators: each finds the face (eye landmarks and/or a face mask) in patient space."""
