#!/bin/sh
# A stand-in for model inference: "scores" every line of a shard's input file.
# usage: infer.sh MODEL INPUT OUTPUT
set -eu
model=$1 input=$2 output=$3
echo "loading model $model"
n=0
while IFS= read -r line; do
  n=$((n + 1))
  # a deterministic "score": the line's length times the model's name length
  echo "$line,$(( ${#line} * ${#model} ))"
done < "$input" > "$output"
echo "scored $n rows of $input into $output"
