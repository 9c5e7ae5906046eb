# Entry points; each target is a thin wrapper over scripts/ so the README's commands stay short.
.PHONY: setup demo test lint bench clean
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
lint:
	bash -c 'source scripts/env.sh && ruff check src bench && ruff format --check src bench'
clean:
	rm -rf build install log
