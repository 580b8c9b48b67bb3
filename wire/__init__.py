"""What both sides of ContactGate share, and nothing else: the SOAP envelope helpers and hardened
parser (`soap`), WS-Security signing and verification (`wsse`), the contract's fault codes
(`faults`), certificate fingerprints and chain checks (`certificates`), the checks a caller makes
on a gateway answer (`answers`), and text and CSV safe to open in a spreadsheet (`spreadsheet`: the
audit reports and a connector's reject file). The schemas are the `contactgate_schemas` package.

The gateway (`gateway/`) and the connecting organisation's side (`connectors/`: the SDK, mappings,
push) both import this package and never each other (tests/test_import_boundary.py).
"""
