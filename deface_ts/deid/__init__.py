"""Header de-identification of DICOM-RT sets (PS3.15 Annex E), keyed so a patient's cases stay linked."""
