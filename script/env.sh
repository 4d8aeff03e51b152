# Sourced by script/run and script/test: where the offline data lives, unless already set.
jdic=/var/lib/mecab/dic/open-jtalk/naist-jdic
if [ -z "${OPEN_JTALK_DICT_DIR:-}" ] && [ -d "$jdic" ]; then
  export OPEN_JTALK_DICT_DIR="$jdic"
fi
# A development checkout has ../shared/nltk_data (the NLTK packages English text needs).
if [ -z "${NLTK_DATA:-}" ] && [ -d ../shared/nltk_data ]; then
  NLTK_DATA="$(cd ../shared/nltk_data && pwd)"
  export NLTK_DATA
fi
