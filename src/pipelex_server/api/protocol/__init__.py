"""The MTHDS Protocol's wire shapes (contract §7) for the /v1 routes: requests, answers, problems, response models."""
