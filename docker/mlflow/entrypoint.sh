#!/bin/sh
# Entry point of the image credit-risk-mlflow: the basic-auth app's secrets from files (mounted
# secrets, never a command line). NAME_FILE, if set, names the file whose content becomes NAME,
# for MLFLOW_AUTH_ADMIN_PASSWORD and MLFLOW_FLASK_SERVER_SECRET_KEY. Then the command.
set -eu
for name in MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
    eval "file=\${${name}_FILE:-}"
    [ -n "$file" ] || continue
    if [ ! -f "$file" ]; then
        echo "credit-risk-mlflow: ${name}_FILE: no such file: $file" >&2
        exit 1
    fi
    if ! value=$(cat "$file" 2> /dev/null); then
        echo "credit-risk-mlflow: ${name}_FILE: $file is not readable by uid $(id -u)" >&2
        exit 1
    fi
    export "$name=$value"
done
exec "$@"
