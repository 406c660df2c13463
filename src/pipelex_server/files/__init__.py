"""The platform's files: file records, uploads as the SDK sends them, signed storage links, runs' files and history."""
