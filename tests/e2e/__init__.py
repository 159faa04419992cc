"""End-to-end tests: real BPMN diagrams, the SpiffWorkflow engine and the proxy as a real process."""
