// Command checker verifies Audit Trail's proofs and checkpoints with the reference implementations:
// golang.org/x/mod/sumdb/note for signed notes and github.com/transparency-dev/merkle for RFC 6962/9162
// proofs. It reads one JSON document on stdin and prints "ok", or the failure and exits 1.
//
//	checker inclusion   < {"key", "checkpoint", "leaf_data", "leaf_index", "tree_size", "inclusion_proof"}
//	checker consistency < {"key", "old", "new", "proof"}
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

type checkpoint struct {
	origin string
	size   uint64
	root   []byte
}

func open(key, msg string) (checkpoint, error) {
	v, err := note.NewVerifier(key)
	if err != nil {
		return checkpoint{}, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open([]byte(msg), note.VerifierList(v))
	if err != nil {
		return checkpoint{}, fmt.Errorf("note: %w", err)
	}
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 {
		return checkpoint{}, fmt.Errorf("checkpoint body has %d lines", len(lines))
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint size: %w", err)
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint root: %w", err)
	}
	return checkpoint{origin: lines[0], size: size, root: root}, nil
}

func hashes(encoded []string) ([][]byte, error) {
	out := make([][]byte, 0, len(encoded))
	for _, e := range encoded {
		h, err := base64.StdEncoding.DecodeString(e)
		if err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, nil
}

func inclusion() error {
	var doc struct {
		Key            string   `json:"key"`
		Checkpoint     string   `json:"checkpoint"`
		LeafData       string   `json:"leaf_data"`
		LeafIndex      uint64   `json:"leaf_index"`
		TreeSize       uint64   `json:"tree_size"`
		InclusionProof []string `json:"inclusion_proof"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&doc); err != nil {
		return err
	}
	cp, err := open(doc.Key, doc.Checkpoint)
	if err != nil {
		return err
	}
	if cp.size != doc.TreeSize {
		return fmt.Errorf("tree size %d, checkpoint %d", doc.TreeSize, cp.size)
	}
	data, err := base64.StdEncoding.DecodeString(doc.LeafData)
	if err != nil {
		return err
	}
	path, err := hashes(doc.InclusionProof)
	if err != nil {
		return err
	}
	h := rfc6962.DefaultHasher
	return proof.VerifyInclusion(h, doc.LeafIndex, doc.TreeSize, h.HashLeaf(data), path, cp.root)
}

func consistency() error {
	var doc struct {
		Key   string   `json:"key"`
		Old   string   `json:"old"`
		New   string   `json:"new"`
		Proof []string `json:"proof"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&doc); err != nil {
		return err
	}
	older, err := open(doc.Key, doc.Old)
	if err != nil {
		return err
	}
	newer, err := open(doc.Key, doc.New)
	if err != nil {
		return err
	}
	path, err := hashes(doc.Proof)
	if err != nil {
		return err
	}
	return proof.VerifyConsistency(rfc6962.DefaultHasher, older.size, newer.size, path, older.root, newer.root)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: checker inclusion|consistency < document.json")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "inclusion":
		err = inclusion()
	case "consistency":
		err = consistency()
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("FAILED:", err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
