#!/bin/sh
# Write OVERLAY/secrets.env with fresh random credentials for kustomize's secretGenerator.
# Never overwrites: remove the file yourself to rotate (then re-apply and restart the pods).
#   k8s/make-secrets.sh k8s/overlays/cpu
# For an external PostgreSQL, edit LORAPLEX_DATABASE_URL in the file afterwards.
set -eu
dir=${1:?usage: $0 OVERLAY_DIR}
out="$dir/secrets.env"
if [ -e "$out" ]; then
  echo "$out exists: remove it first to make new credentials" >&2
  exit 1
fi
# 24 random bytes as hex: no character that needs quoting in a URL, nginx or an env file.
rand() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
password=$(rand)
umask 077
cat >"$out" <<END
LORAPLEX_ADMIN_KEY=lpx-admin-$(rand)
LORAPLEX_VLLM_API_KEY=$(rand)
LORAPLEX_CHROMA_TOKEN=$(rand)
POSTGRES_PASSWORD=$password
LORAPLEX_DATABASE_URL=postgresql+psycopg://loraplex:$password@postgres:5432/loraplex
END
echo "wrote $out"
