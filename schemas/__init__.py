"""Data contracts shared by pipelines/ and model/: Open Images tables, plan records, examples."""
