"""What every command's parser shares: the help format and the program name."""

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and every flag's default (where it has one) in its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.default in (None, argparse.SUPPRESS, False) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def command_parser(doc, prog=None):
    """An ``ArgumentParser`` for one command: ``doc`` is its description, ``prog`` its name
    (``c2am-tf fit`` from the entry point; the script's name when run as a script)."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=HelpFormatter)
